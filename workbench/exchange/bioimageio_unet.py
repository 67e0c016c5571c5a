"""The architecture source shipped inside a workbench bioimage.io package.

This file travels on its own inside the package (bioimage.io's ``pytorch_state_dict`` weights
name it as their architecture): it must import nothing from the workbench, only torch and
segmentation-models-pytorch, which the package's environment file lists.
"""

import torch


class WorkbenchUnet(torch.nn.Module):
    """A segmentation-models-pytorch U-Net that returns softmax probabilities over classes.

    Parameters
    ----------
    **init_kwargs
        The keyword arguments of ``segmentation_models_pytorch.Unet`` recorded in the workbench
        model card (encoder name and depth, decoder channels, in_channels, classes).
    """

    def __init__(self, **init_kwargs):
        super().__init__()
        import segmentation_models_pytorch as smp

        kwargs = dict(init_kwargs, encoder_weights=None)
        kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
        self.network = smp.Unet(**kwargs)

    def forward(self, x):
        return torch.softmax(self.network(x), dim=1)

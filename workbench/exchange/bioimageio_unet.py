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
    distance : bool
        The network's last output is not a class but the distance to the object's edge (a share
        of the object's largest, 0-1): a sigmoid turns it into that, the softmax covers the rest.
        (The workbench's ``output_probabilities``, repeated because this file travels alone.)
    **init_kwargs
        The keyword arguments of ``segmentation_models_pytorch.Unet`` recorded in the workbench
        model card (encoder name and depth, decoder channels, in_channels, classes = outputs).
    """

    def __init__(self, distance=False, **init_kwargs):
        super().__init__()
        import segmentation_models_pytorch as smp

        kwargs = dict(init_kwargs, encoder_weights=None)
        kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
        self.network = smp.Unet(**kwargs)
        self.distance = bool(distance)

    def forward(self, x):
        logits = self.network(x)
        if not self.distance:
            return torch.softmax(logits, dim=1)
        return torch.cat([torch.softmax(logits[:, :-1], dim=1), torch.sigmoid(logits[:, -1:])], dim=1)

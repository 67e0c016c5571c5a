"""Step 1: open or create a project, choose what to find, and bring in images.

Images come from the browser (``ipywidgets.FileUpload``: the files travel through the page, so
this suits images up to a few tens of MB) or from a folder on the computer that runs the
workbench (any size: copied block by block).

Examples
--------
>>> setup = ProjectSetupPanel(project)                     # doctest: +SKIP
>>> setup.on_project_changed(lambda project: print(project))  # doctest: +SKIP
>>> setup                                                  # doctest: +SKIP
"""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import ipywidgets as W

from workbench import config, pipeline
from workbench.conventions import IMAGE_SUFFIXES
from workbench.errors import WorkbenchError
from workbench.results import list_inputs
from workbench.store import Project, recent_projects, remember_project

from workbench_widgets.training import _status_html, _user_message

__all__ = ["ProjectSetupPanel", "add_uploaded_files", "UPLOAD_ACCEPT"]

UPLOAD_ACCEPT = ".tif,.tiff,.png,.jpg,.jpeg,.npy"
FOLDER_SUFFIXES = IMAGE_SUFFIXES  # what a folder is read for (workbench.conventions)
MODE_CHOICES = [("Regions (semantic): one class per pixel", "semantic"),
                ("Separate objects (instance): count and measure each object", "instance")]


def _safe_file_name(name: str) -> str:
    base = Path(str(name)).name  # a browser may send a path; keep only the file name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"


def _upload_entries(value) -> list[dict]:
    """ipywidgets 8 gives a tuple of dicts; ipywidgets 7 gave a dict name -> {metadata, content}."""
    if isinstance(value, dict):
        return [{"name": name, "content": entry["content"]} for name, entry in value.items()]
    return [dict(entry) for entry in value or ()]


def add_uploaded_files(project: Project, uploads: Iterable[dict]) -> list[str]:
    """Add uploaded files (dicts with ``name`` and ``content`` bytes) to the project; return their names.

    Raises
    ------
    WorkbenchError
        For a file that is not a readable image; the images before it stay added.
    """
    added = []
    with tempfile.TemporaryDirectory(prefix="workbench-upload-") as folder:
        for entry in uploads:
            file_name = _safe_file_name(entry.get("name", "upload"))
            if not file_name.lower().endswith(tuple(UPLOAD_ACCEPT.split(","))):
                raise WorkbenchError(f"{file_name!r} is not an image this workbench reads; upload "
                                     f"{UPLOAD_ACCEPT.replace(',', ', ')} files")
            path = Path(folder) / file_name
            path.write_bytes(bytes(entry["content"]))
            stem = file_name.split(".")[0] if not file_name.lower().endswith(".ome.tif") else file_name[:-8]
            # The temporary copy is gone after this: the manifest records the upload, not the copy.
            added.append(project.add_image(path, name=stem, source_name=f"uploaded: {file_name}"))
    return added


class ProjectSetupPanel:
    """Open or create a project and manage its images.

    Parameters
    ----------
    project : Project, optional
        The project to show first.
    projects_dir : path-like, optional
        Where new projects are created by default (`workbench.config.projects_dir`:
        ``$WORKBENCH_PROJECTS_DIR``, else ``~/workbench-projects``; never inside the installation).

    Attributes
    ----------
    project : Project or None
    error : str or None
        The message shown for the last failure.
    """

    def __init__(self, project: Project | None = None, *, projects_dir=None):
        self.project = project
        self.error: str | None = None
        self._callbacks: list[Callable[[Project], Any]] = []
        if projects_dir is None:
            projects_dir = config.projects_dir()
        style = {"description_width": "110px"}
        self.current = W.HTML()
        self.status = W.HTML()

        self.open_path = W.Text(description="Folder", style=style, layout=W.Layout(width="560px"),
                                placeholder="full path of a project folder")
        self.open_button = W.Button(description="Open", icon="folder-open")
        self.recent = W.Dropdown(description="Recent projects", style=style, layout=W.Layout(width="560px"))
        self.recent_button = W.Button(description="Open", icon="folder-open", tooltip="Open the chosen project")
        self.new_name = W.Text(description="Name", style=style, layout=W.Layout(width="360px"),
                               placeholder="e.g. liver-nuclei")
        self.new_folder = W.Text(value=str(projects_dir), description="Inside folder", style=style,
                                 layout=W.Layout(width="560px"))
        self.new_mode = W.RadioButtons(options=MODE_CHOICES, value="instance", description="Find", style=style,
                                       layout=W.Layout(width="560px"))
        self.new_classes = W.Text(value="background, nucleus", description="Classes", style=style,
                                  layout=W.Layout(width="560px"),
                                  placeholder="background first, then your classes, separated by commas")
        self.create_button = W.Button(description="Create project", icon="plus", button_style="primary")

        self.upload = W.FileUpload(accept=UPLOAD_ACCEPT, multiple=True, description="Upload images",
                                   layout=W.Layout(width="200px"))
        self.folder_path = W.Text(description="From folder", style=style, layout=W.Layout(width="560px"),
                                  placeholder="a folder or image file on this computer (any size)")
        self.folder_button = W.Button(description="Add", icon="plus")
        self.remove_choice = W.Dropdown(description="Remove", style=style, layout=W.Layout(width="360px"))
        self.remove_button = W.Button(description="Remove image", icon="trash", button_style="warning")

        self.open_button.on_click(lambda _b: self.open(self.open_path.value))
        self.recent_button.on_click(lambda _b: self.open(self.recent.value or ""))
        self.create_button.on_click(lambda _b: self.create(self.new_name.value, folder=self.new_folder.value,
                                                           mode=self.new_mode.value, classes=self.new_classes.value))
        self.upload.observe(self._uploaded, names="value")
        self.folder_button.on_click(lambda _b: self.add_from_path(self.folder_path.value))
        self.remove_button.on_click(lambda _b: self.remove_image(self.remove_choice.value))
        self.starter_button = W.Button(description="Try the starter model", icon="magic",
                                       tooltip="Segment the images with the model that comes with the workbench, "
                                               "before painting anything")
        self.starter_button.on_click(lambda _b: self.try_starter())
        self.starter_row = W.HBox([self.starter_button, W.HTML(
            "&nbsp;No labels needed: see what the pretrained starter model finds (step 4 shows it), then paint "
            "where it is wrong.")])
        self.new_mode.observe(self._mode_chosen, names="value")

        images = W.VBox([
            W.HTML("<b>Add images</b> — upload from your computer (up to about 10 MB each) or copy from a folder "
                   "on the computer that runs the workbench (any size)."),
            self.upload,
            W.HBox([self.folder_path, self.folder_button]),
            W.HBox([self.remove_choice, self.remove_button]),
            self.starter_row,
        ])
        new = W.VBox([self.new_name, self.new_folder, self.new_mode, self.new_classes, self.create_button])
        opening = W.VBox([W.HBox([self.open_path, self.open_button])])
        self.sections = W.Accordion(children=[images, new, opening], selected_index=0)
        for index, title in enumerate(["Images of this project", "Start a new project", "Open another project"]):
            self.sections.set_title(index, title)
        self.recent_row = W.HBox([self.recent, self.recent_button])
        self.widget = W.VBox([self.current, self.recent_row, self.status, self.sections],
                             layout=W.Layout(padding="4px"))
        self.widget.add_class("wb-project")
        self._show_project()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public actions
    def on_project_changed(self, callback: Callable[[Project], Any]) -> Callable[[Project], Any]:
        """Call ``callback(project)`` when another project is opened or created."""
        self._callbacks.append(callback)
        return callback

    def open(self, folder: str) -> Project | None:
        """Open the project in `folder` and make it current."""
        folder = str(folder).strip()
        if not folder:
            return self._fail("Type the folder of the project to open.")
        try:
            project = Project.open(Path(folder).expanduser())
        except WorkbenchError as exc:
            return self._fail(_user_message(exc, "opening the project"))
        self._switch(project, f"Opened {project.name}.")
        return project

    def create(self, name: str, *, folder=None, mode: str = "semantic",
               classes: str | Iterable[str] = "background, foreground") -> Project | None:
        """Create a project called `name` inside `folder` and make it current."""
        name = str(name).strip()
        if not name:
            return self._fail("Give the new project a name (it becomes its folder name).")
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        folder = Path(str(folder or Path.cwd())).expanduser()
        path = folder / re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
        try:
            project = Project.create(path, mode=mode, classes=list(classes), name=name)
        except (WorkbenchError, OSError) as exc:
            return self._fail(_user_message(exc, "creating the project"))
        self._switch(project, f"Created {name} in {path}. Now add images.")
        self.sections.selected_index = 0
        return project

    def add_uploads(self, uploads: Iterable[dict]) -> list[str]:
        """Add uploaded files (``name`` + ``content``) to the current project."""
        if self._require_project() is None:
            return []
        try:
            added = add_uploaded_files(self.project, uploads)
        except (WorkbenchError, OSError) as exc:
            self._fail(_user_message(exc, "adding the uploaded images"))
            self._show_project()
            return []
        self._added(added)
        return added

    def add_from_path(self, path: str) -> list[str]:
        """Copy an image file, a Zarr, or every image of a folder into the current project."""
        if self._require_project() is None:
            return []
        path = Path(str(path).strip()).expanduser()
        if not str(path).strip() or str(path) == ".":
            self._fail("Type the path of an image file or a folder of images.")
            return []
        added = []
        try:
            for file in list_inputs(path):
                added.append(self.project.add_image(file))
        except (WorkbenchError, OSError) as exc:
            self._fail(_user_message(exc, "adding images"))
            self._show_project()
            return added
        self._added(added)
        return added

    def remove_image(self, name: str | None) -> None:
        """Remove an image, with its labels and predictions, from the project."""
        if self._require_project() is None or not name:
            return
        try:
            self.project.remove_image(name)
        except WorkbenchError as exc:
            self._fail(_user_message(exc, "removing the image"))
            return
        self._set_status("success", f"Removed {name}.")
        self._show_project()
        self._notify()

    def try_starter(self) -> dict | None:
        """Segment every image with the starter model shipped with the workbench: no labels needed
        (`workbench.pipeline.try_starter`); the results show in the review step."""
        if self._require_project() is None:
            return None
        self._set_status("info", "Segmenting the images with the starter model…")
        try:
            summary = pipeline.try_starter(self.project)
        except (WorkbenchError, OSError) as exc:
            return self._fail(_user_message(exc, "trying the starter model"))
        objects = sum(int(info.get("objects", 0)) for info in summary.values())
        self.error = None
        self._set_status("success", f"The starter model found {objects} objects in {len(summary)} image(s). See "
                                    "them in step 4 (Review); paint where it is wrong, then train.")
        return summary

    # ------------------------------------------------------------------ machinery
    def _uploaded(self, change) -> None:
        entries = _upload_entries(change["new"])
        if not entries:
            return
        self.add_uploads(entries)
        self.upload.value = ()  # ready for the next upload; also frees the bytes

    def _added(self, added: list[str]) -> None:
        self.error = None
        self._set_status("success", f"Added {len(added)} image(s): {', '.join(added)}." if added else
                         "No images were added.")
        self._show_project()
        self._notify()

    def _switch(self, project: Project, message: str) -> None:
        self.project = project
        remember_project(project)
        self.error = None
        self._set_status("success", message)
        self._show_project()
        self._notify()

    def _notify(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback(self.project)
            except Exception as exc:  # noqa: BLE001 - shown on the page
                self._fail(_user_message(exc, "showing the project"))

    def _require_project(self) -> Project | None:
        if self.project is None:
            self._fail("Open or create a project first.")
        return self.project

    def _mode_chosen(self, change) -> None:
        if change["new"] == "instance":
            names = [c.strip() for c in self.new_classes.value.split(",") if c.strip()]
            if len(names) != 2:
                self.new_classes.value = "background, " + (names[1] if len(names) > 1 else "object")

    def _show_recent(self) -> None:
        """The recent projects other than the current one (newest first); the row hides when there are none."""
        current = str(self.project.path.resolve()) if self.project is not None else None
        entries = [e for e in recent_projects() if e["path"] != current]
        self.recent.options = [(f"{e['name']}  —  {e['path']}", e["path"]) for e in entries]
        self.recent.value = entries[0]["path"] if entries else None
        self.recent_row.layout.display = "flex" if entries else "none"

    def _show_project(self) -> None:
        if hasattr(self, "recent_row"):
            self._show_recent()
        project = self.project
        if project is None:
            self.starter_row.layout.display = "none"
            self.current.value = "<p>No project open: create one below, or open an existing one.</p>"
            self.remove_choice.options = []
            return
        chips = "".join(
            f'<span style="display:inline-block;margin:0 6px 2px 0;padding:1px 8px;border-radius:9px;'
            f'background:{c.color};color:white;font-size:12px">{html.escape(c.name)}</span>'
            for c in project.classes)
        what = "separate objects (instance)" if project.mode == "instance" else "regions (semantic)"
        rows = []
        for name in project.image_names:
            info = project.image_info(name)
            stats = project.label_stats(name)
            shape = " × ".join(str(s) for s in info.shape)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(shape)} ({html.escape(info.axes)})</td>"
                        f"<td>{html.escape(info.dtype)}</td><td>{100 * stats['annotated_fraction']:.1f} %</td></tr>")
        table = ('<table style="border-collapse:collapse;margin-top:4px" cellpadding="3">'
                 '<tr style="text-align:left;border-bottom:1px solid #ccc"><th>image</th><th>size</th>'
                 '<th>type</th><th>labelled</th></tr>' + "".join(rows) + "</table>") if rows else \
            "<p><i>No images yet: add some below.</i></p>"
        self.starter_row.layout.display = "" if project.mode == "instance" and project.image_names else "none"
        self.current.value = (
            f'<div><b>Project:</b> {html.escape(project.name)} '
            f'<span style="color:#777">({html.escape(str(project.path))})</span><br>'
            f"<b>Finds:</b> {what} &nbsp; <b>Classes:</b> {chips}{table}</div>")
        self.remove_choice.options = project.image_names
        self.remove_choice.value = None

    def _set_status(self, kind: str, text: str) -> None:
        self.status.value = _status_html(kind, text)

    def _fail(self, message: str):
        self.error = message
        self._set_status("error", message)
        return None

"""LabelMeFacade (Froehlich, Rodner, Denzler, ICPR 2010) in the ``folder`` layout.

Facade and street images (mostly 683 x 512) with 8 classes; the catch-all ``various`` is 255.
``shared/data/labelmefacade`` holds the release's 100 training images and 345 of its test
images as val (see its README). Six classes are CamVid's (CamVid's Tree is ``vegetation``);
door and window are not.
"""

from clipfuse.data.folder import FolderDataset

LABELMEFACADE_CLASSES = (
    "building", "car", "door", "pavement", "road", "sky", "vegetation", "window",
)  # fmt: skip


class LabelMeFacade(FolderDataset):
    """LabelMeFacade in the ``folder`` layout whose ``classes.txt`` is
    :data:`LABELMEFACADE_CLASSES` (relabelling options as :class:`FolderDataset`)."""

    name = "labelmefacade"
    fixed_classes = LABELMEFACADE_CLASSES
    folder_names = ("labelmefacade", "LabelMeFacade")

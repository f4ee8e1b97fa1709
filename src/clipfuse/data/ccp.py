"""Clothing Co-Parsing (CCP), the pixel-labelled part, in the ``folder`` layout.

Yang et al., "Clothing Co-Parsing by Joint Image Segmentation and Labeling", CVPR 2014: street-
fashion photos (about 550 x 830) with labels of the main person's clothing, skin and hair, 59
names (``null``, class 0, is everything else). ``shared/data/ccp`` holds a fixed split
(604 train, 200 val); see its README. The scoring protocol of this project (which names are
ignored or merged, the LVIS aliases of the rest) is ``configs/_base_/ccp.yaml``.
"""

from clipfuse.data.folder import FolderDataset

CCP_CLASSES = (
    "null", "accessories", "bag", "belt", "blazer", "blouse", "bodysuit", "boots", "bra",
    "bracelet", "cape", "cardigan", "clogs", "coat", "dress", "earrings", "flats", "glasses",
    "gloves", "hair", "hat", "heels", "hoodie", "intimate", "jacket", "jeans", "jumper",
    "leggings", "loafers", "necklace", "panties", "pants", "pumps", "purse", "ring", "romper",
    "sandals", "scarf", "shirt", "shoes", "shorts", "skin", "skirt", "sneakers", "socks",
    "stockings", "suit", "sunglasses", "sweater", "sweatshirt", "swimwear", "t-shirt", "tie",
    "tights", "top", "vest", "wallet", "watch", "wedges",
)  # fmt: skip
"""The 59 names of the release's ``label_list``; mask value ``v`` is ``CCP_CLASSES[v]``."""


class CCP(FolderDataset):
    """CCP in the ``folder`` layout whose ``classes.txt`` is :data:`CCP_CLASSES`.

    Takes the relabelling options of :class:`FolderDataset` (``merge``, ``ignore``, ``unseen``).
    """

    name = "ccp"
    fixed_classes = CCP_CLASSES
    folder_names = ("ccp",)

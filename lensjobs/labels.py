"""The segmentation classes, as in the original notebooks; every module uses these."""

ARCS, LENS_LIGHT, OTHER, BACKGROUND = 0, 1, 2, 3
CLASS_NAMES = ("arcs", "lens light", "other objects", "background")
NUM_CLASSES = len(CLASS_NAMES)

"""Codes shared by every store: spectrum status, data split and wavelength medium.

One definition for the whole toolkit; each store's contract says which of them it uses.
"""

#: Per-spectrum status of a grid store (``status`` array, int8).
STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_OK: "ok", STATUS_FAILED: "failed"}
#: Data split of a spectrum (``split`` array, int8): the code is the index in this tuple.
SPLIT_NAMES = ("train", "test", "val")
SPLIT_CODES = {name: code for code, name in enumerate(SPLIT_NAMES)}
#: The wavelength media a store's ``wave`` can be in (attribute ``medium``).
WAVE_MEDIA = ("air", "vacuum")

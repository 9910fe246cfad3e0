"""`/iviewer/`: OMERO.iviewer's own metadata route (omero-iviewer urls.py:27-28)."""
from __future__ import annotations

from bench.sim.http import Endpoint
from bench.sim.imgdata import iviewer_image_data

ENDPOINTS = [
    Endpoint("iviewer:image_data", ("/iviewer/image_data/{iid:int}/",), iviewer_image_data),
]

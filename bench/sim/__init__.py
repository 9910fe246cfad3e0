"""The simulated OMERO.web + omero-ms-image-region backend (`bench sim`)."""

"""omero-marshal's JSON for the API v0, with the `url:*` links the API views add (absolute URLs)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.sim.catalog import Acquisition, Catalog, Dataset, Group, Image, Owned, Plate, Project, Screen, User, Well
from bench.sim.rendering import EMISSION, NAMES, default_rdef

SCHEMA = "http://www.openmicroscopy.org/Schemas/OME/2016-06#"


def typed(kind: str, obj_id: int, **fields: object) -> dict:
    return {"@id": obj_id, "@type": SCHEMA + kind, **fields}


def length(value: float) -> dict:
    return {"@type": "TBD#LengthI", "Unit": "MICROMETER", "Symbol": "µm", "Value": value}


def experimenter(u: User) -> dict:
    return typed("Experimenter", u.id, FirstName=u.first, LastName=u.last, UserName=u.name,
                 **{"omero:details": {"@type": "TBD#Details"}})


def experimenter_group(g: Group) -> dict:
    return typed("ExperimenterGroup", g.id, Name=g.name,
                 **{"omero:details": {"@type": "TBD#Details", "permissions": _perm_flags(g.perm)}})


def _perm_flags(perm: str, mine: bool = False) -> dict:
    return {"@type": "TBD#Permissions", "perm": perm, "canAnnotate": mine, "canDelete": mine, "canEdit": mine,
            "canLink": mine, "isWorldWrite": perm[5] == "w", "isWorldRead": perm[4] == "r",
            "isGroupWrite": perm[3] == "w", "isGroupRead": perm[2] == "r", "isGroupAnnotate": perm[3] == "a",
            "isUserWrite": True, "isUserRead": True}


def _color_int(hex_rgb: str, alpha: int = 255) -> int:
    """OMERO colours are signed 32-bit RGBA ints."""
    value = (int(hex_rgb, 16) << 8) | alpha
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass
class Marshal:
    """Encoders bound to one request: the catalog, the reader, and the absolute API base URL."""
    catalog: Catalog
    user: User
    base: str           # ".../api/v0/"

    def url(self, path: str) -> str:
        return f"{self.base}m/{path}"

    def details(self, obj: Owned | Image) -> dict:
        cat = self.catalog
        return {"@type": "TBD#Details", "owner": experimenter(cat.users[obj.owner_id]),
                "group": experimenter_group(cat.groups[obj.group_id]),
                "permissions": _perm_flags(cat.groups[obj.group_id].perm, obj.owner_id == self.user.id)}

    def _owned(self, kind: str, obj: Owned, **fields: object) -> dict:
        return typed(kind, obj.id, Name=obj.name, **fields, **{"omero:details": self.details(obj)})

    def screen(self, s: Screen) -> dict:
        return {**self._owned("Screen", s, Description=s.description),
                "url:plates": self.url(f"screens/{s.id}/plates/"), "url:screen": self.url(f"screens/{s.id}/")}

    def plate(self, p: Plate, single: bool = False) -> dict:
        rv = {**self._owned("Plate", p, Columns=p.cols, Rows=p.rows, ColumnNamingConvention="number",
                            RowNamingConvention="letter", FieldIndex=0),
              "url:wells": self.url(f"plates/{p.id}/wells/"),
              "url:plateacquisitions": self.url(f"plates/{p.id}/plateacquisitions/"),
              "url:screens": self.url(f"plates/{p.id}/screens/"), "url:plate": self.url(f"plates/{p.id}/")}
        if single:
            rv.update(self._wellsample_index(f"plates/{p.id}", range(p.fields)))
        return rv

    def _wellsample_index(self, prefix: str, fields: range) -> dict:
        return {"omero:wellsampleIndex": [fields.start, fields.stop - 1],
                "url:wellsampleindex_wells": [self.url(f"{prefix}/wellsampleindex/{i}/wells/") for i in fields]}

    def acquisition(self, a: Acquisition) -> dict:
        return {**self._owned("PlateAcquisition", a, MaximumFieldCount=a.n_fields,
                              StartTime=1_600_000_000_000 + a.id, EndTime=1_600_003_600_000 + a.id),
                **self._wellsample_index(f"plateacquisitions/{a.id}", a.fields),
                "url:plateacquisition": self.url(f"plateacquisitions/{a.id}/")}

    def well(self, w: Well, fields: range | None = None, pixels: bool = False) -> dict:
        samples = []
        for img in self.catalog.well_images(w, fields):
            sample = typed("WellSample", img.ws_id, PositionX=length(100.0 * img.field),
                           PositionY=length(100.0 * img.field), Image=self.image(img, pixels=pixels, links=False))
            acq = self.catalog.acquisitions.get(img.acquisition_id) if img.acquisition_id else None
            if acq:
                sample["PlateAcquisition"] = typed("PlateAcquisition", acq.id, Name=acq.name,
                                                   **{"omero:details": self.details(acq)})
            samples.append(sample)
        rv = typed("Well", w.id, Column=w.col, Row=w.row, **{"omero:details": self.details(w.plate)})
        if samples:
            rv["WellSamples"] = samples
        rv.update({"url:well": self.url(f"wells/{w.id}/"), "url:plates": self.url(f"wells/{w.id}/plates/")})
        return rv

    def project(self, p: Project) -> dict:
        return {**self._owned("Project", p, Description=p.description),
                "url:datasets": self.url(f"projects/{p.id}/datasets/"), "url:project": self.url(f"projects/{p.id}/")}

    def dataset(self, d: Dataset) -> dict:
        return {**self._owned("Dataset", d, Description=d.description),
                "url:images": self.url(f"datasets/{d.id}/images/"),
                "url:projects": self.url(f"datasets/{d.id}/projects/"), "url:dataset": self.url(f"datasets/{d.id}/")}

    def image(self, img: Image, pixels: bool = True, channels: bool = False, links: bool = True) -> dict:
        rv = self._owned("Image", img, AcquisitionDate=img.created * 1000,
                         **{"omero:archived": False, "omero:series": 0})
        if pixels:
            rv["Pixels"] = self._pixels(img, channels)
        rv["url:image"] = self.url(f"images/{img.id}/")
        if links:
            rv["url:datasets"] = self.url(f"images/{img.id}/datasets/")
        return rv

    def _pixels(self, img: Image, channels: bool) -> dict:
        px = img.pixels
        rv = typed("Pixels", img.id, SizeX=px.size_x, SizeY=px.size_y, SizeZ=px.size_z, SizeC=px.size_c,
                   SizeT=px.size_t, SignificantBits=16,
                   Type={"@type": "TBD#PixelsType", "value": "uint16"},
                   DimensionOrder={"@type": "TBD#DimensionOrder", "value": "XYZCT"})
        if px.physical_size:
            rv.update(PhysicalSizeX=length(px.physical_size), PhysicalSizeY=length(px.physical_size))
        if channels:
            rv["Channels"] = [typed("Channel", img.id * 10 + i, Name=NAMES[i % len(NAMES)],
                                    Color=_color_int(ch.color), EmissionWavelength=length(EMISSION[i % len(EMISSION)]))
                              for i, ch in enumerate(default_rdef(img).channels)]
        return rv

    def roi(self, img: Image, roi_id: int, shape_ids: list[int]) -> dict:
        shapes = [typed("Mask", sid, X=10.0 * k, Y=10.0 * k, Width=40.0, Height=30.0,
                        **({"FillColor": _color_int("FF0000", 128)} if k == 0 else {}))
                  for k, sid in enumerate(shape_ids)]
        return typed("ROI", roi_id, shapes=shapes, **{"omero:details": self.details(img)})

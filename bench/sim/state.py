"""The sim's shared state: one object handed to every view on both ports."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.sim.capacity import Pool
from bench.sim.catalog import Catalog
from bench.sim.config import SimConfig
from bench.sim.faults import Faults
from bench.sim.omerodb import journal
from bench.sim.presets import build
from bench.sim.pyramids import Pyramids
from bench.sim.rendering import RDefStore
from bench.sim.sessions import Sessions
from bench.sim.stats import Stats


@dataclass
class Sim:
    config: SimConfig
    catalog: Catalog
    rdefs: RDefStore
    sessions: Sessions
    pool: Pool
    pyramids: Pyramids
    stats: Stats = field(default_factory=Stats)
    faults: Faults = field(default_factory=Faults)

    @classmethod
    def from_config(cls, config: SimConfig) -> Sim:
        catalog = build(config.scale)
        catalog.journal = journal(config.db)
        return cls(config, catalog, RDefStore(catalog),
                   Sessions(catalog, config.session_cookie, config.cookie_age, config.thumb_size,
                            config.redis_url),
                   Pool(config.workers, config.speed), Pyramids(catalog))

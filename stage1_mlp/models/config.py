"""The one config both MLP implementations share, so a checkpoint of either can rebuild it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

EMBED_INIT = 0.1  # embedding rows start as U(-0.1, 0.1) in both implementations

# The largest model the programs build. The default is ~2M rows x 32; beyond these limits a typo (an extra zero in
# --buckets) or an edited checkpoint would ask for more memory than the machine has, so it is refused up front.
LIMITS = {"num_features": 2 ** 25, "num_classes": 1000, "embed_dim": 1024, "hidden_dim": 8192}
MAX_TABLE = 2 ** 28   # numbers in the embedding table (rows x embed_dim): 1 GiB of float32, 3 GiB with Adam's moments


@dataclass
class MLPConfig:
    num_features: int        # rows of the embedding table: words + n-gram hash buckets
    num_classes: int
    embed_dim: int = 32
    hidden_dim: int = 64
    dropout: float = 0.3

    def __post_init__(self) -> None:
        """Refuse a config no model should be built from (a checkpoint's config is rebuilt through here too)."""
        for name, most in LIMITS.items():
            value = getattr(self, name)
            least = 2 if name == "num_classes" else 1
            if not (isinstance(value, int) and not isinstance(value, bool) and least <= value <= most):
                raise ValueError(f"{name} = {value!r} is not an integer in {least}..{most:,}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout = {self.dropout!r} is not in [0, 1)")
        if self.num_features * self.embed_dim > MAX_TABLE:
            raise ValueError(f"an embedding table of {self.num_features:,} x {self.embed_dim} numbers is more than "
                             f"the {MAX_TABLE:,} this course builds")

    def to_dict(self) -> dict:
        return asdict(self)

"""One worker process of ``workers.run_workers`` (``python -m radis_mlx.generate``): it reads its job
(settings, row ids, its part file) from stdin and appends its rows to its own part file.

It lives above the stage, whose settings it rebuilds, so that the stage's ``workers`` module need not
import the stage back.
"""

from pathlib import Path

from .rows import generate_rows
from .config import GenerateConfig
from .workers import read_job

if __name__ == "__main__":
    job = read_job()
    generate_rows(GenerateConfig(**job["config"]), job["ids"], Path(job["part"]), progress=False)

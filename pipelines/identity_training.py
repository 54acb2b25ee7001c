"""Train the probabilistic identity model: its own flow, run when the data changes shape, not nightly.

Reads the customer records the last nightly run staged (in the work file), fits the splink
model (``warehouse/identity_model.py``) and saves it at ``<data dir>/identity/model.json``;
the next nightly run scores pairs with it.  Holds the run lock, so it never races a nightly.

    python -m pipelines.identity_training
"""

from __future__ import annotations

from contextlib import closing

from prefect import flow, get_run_logger

from warehouse.errors import StageError
from warehouse.identity import train_model
from warehouse.identity_model import describe
from warehouse.runs import run_lock
from warehouse.settings import Settings
from warehouse.workdb import open_work_db


@flow(name="train-identity-model", log_prints=True)
def train_identity_model() -> dict:
    """Fit the identity model on the staged customer records and save it; returns its levels."""
    logger = get_run_logger()
    settings = Settings.from_env()
    with run_lock(settings), closing(open_work_db(settings)) as con:
        records = con.execute("SELECT count(*) FROM stage.customer_records").fetchall()[0][0]
        if not records:
            raise StageError("identity_train", f"no staged customer records in {settings.work_db}",
                             "run `tagwright run` first, then train")
        model = train_model(con, settings.identity_model, settings.memory_limit)
    levels = describe(model)
    for comparison, level, m, u, factor in levels:
        logger.info("%s / %s: m=%.4f u=%.6f bayes factor %.3g", comparison, level, m, u, factor)
    logger.info("identity model trained on %d records, saved to %s", records, settings.identity_model)
    return {"model": str(settings.identity_model), "records": records,
            "prior": model["probability_two_random_records_match"],
            "levels": [dict(zip(("comparison", "level", "m", "u", "bayes_factor"), row)) for row in levels]}


if __name__ == "__main__":
    train_identity_model()

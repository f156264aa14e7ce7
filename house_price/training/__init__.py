"""Training machinery around the LightningModule: callbacks, checkpoint writing, the logger, tuning."""

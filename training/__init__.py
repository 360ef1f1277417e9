"""livetune's learning library: the model, the predictor and (later) the trainer.

Runs on a machine with the torch stack only: nothing here imports BentoML.
"""

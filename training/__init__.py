"""livetune's learning library: the model, the predictor, the store, the adapter registry
and the trainer.

Runs on a machine with the torch stack only: nothing here imports BentoML or service/.
"""

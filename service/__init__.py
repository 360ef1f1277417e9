"""livetune's HTTP face: settings, request/response models and the BentoML service."""

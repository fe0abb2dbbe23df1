"""After training: loading a trained model (`loading`), SavedModel export (`export`), the
model server's config and clients (`model_server`), tiled inference on large images
(`segment`)."""

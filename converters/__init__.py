"""Build-side tooling (not shipped in the wheel): reference models and the conversion matrix."""

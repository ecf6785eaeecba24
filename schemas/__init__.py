"""Dataset configs (YAML) and curated TFDV schemas, shipped as package data."""

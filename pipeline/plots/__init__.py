"""plots layer of cropn2o (see docs/architecture.md)."""

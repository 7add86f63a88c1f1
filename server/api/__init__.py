"""The REST API (FastAPI), under /api/v1: thin handlers over server/services."""

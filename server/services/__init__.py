"""What the API does, as plain functions over a Session: no FastAPI, no commits.

The request edge (server/api/routers) commits; runs are handed to the broker only after
that commit (server/api/enqueue.py).
"""

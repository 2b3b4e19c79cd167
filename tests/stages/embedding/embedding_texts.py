"""Texts for the embedding tests: paragraphs of the Python language reference, which ships with Python."""

from pydoc_data.topics import topics

PARAGRAPHS = [
    p.strip() for _, body in sorted(topics.items()) for p in body.split("\n\n") if len(p.strip()) > 80
]

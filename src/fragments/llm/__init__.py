"""The model layer: catalogue, provider construction and the streaming seam the chat uses."""

"""Models the stages run: the CLIP factory (shipped tiny model or real checkpoints), the multilingual
text encoder, and the scoring heads. Weights of the shipped tiny models live in ``weights/``."""

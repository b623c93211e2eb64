"""Publish to the Hugging Face Hub and load back: layout, cards, push, training loaders.

A Hub dataset is data files plus a README.md whose YAML declares configs;
``layout`` writes the files, ``card`` the README, ``push`` uploads, ``load``
streams a repo into training.
"""

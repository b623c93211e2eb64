"""laion-hf: build, clean, publish and load LAION-style datasets on the Hugging Face Hub."""

__version__ = "0.1.0"

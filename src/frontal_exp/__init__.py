"""frontal_exp: experiments on face frontalization, measured with face recognition embeddings."""

__version__ = "0.1.0"

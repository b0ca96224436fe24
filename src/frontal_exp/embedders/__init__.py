"""Face embedders: detector + alignment + recognizer, as the study's embedder pairs."""

from frontal_exp.embedders.base import Detector, Face, Recognizer
from frontal_exp.embedders.embedder import FaceEmbedder, FaceEmbedding

__all__ = ["Detector", "Face", "FaceEmbedder", "FaceEmbedding", "Recognizer"]

"""transfergen: transfer learning for natural language generation."""

__version__ = "0.1.0"

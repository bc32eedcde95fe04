"""codeloop: self-hosted code completion that learns from its users."""
__version__ = "0.1.0"

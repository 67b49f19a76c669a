"""The persistence service: owns chat sessions and messages."""

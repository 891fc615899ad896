"""ToolWeaver's shapes: the tool-shaped helpers and key layouts its users port from."""

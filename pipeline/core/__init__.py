"""What every stage shares: params schema, project paths, errors, image I/O, colour, the stage entry."""

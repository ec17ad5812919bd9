"""What every stage shares: params, project paths, errors, image I/O, colour, the stage entry."""

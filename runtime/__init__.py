"""The Trio nursery tree: owns every socket, file, thread and clock of the station."""

"""dcmsortd: sort DICOM arrivals from a named pipe into symlink trees and series JSON records."""

__version__ = "0.1.0"

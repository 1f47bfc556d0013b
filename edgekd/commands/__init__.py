"""One click command per module; ``edgekd.cli`` registers every module here that defines ``command``."""

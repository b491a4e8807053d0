//! Walking site-packages or a tree: which binaries to read.

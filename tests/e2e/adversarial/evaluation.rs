//! Forbids that errored and rules that missed a transfer (findings 1, 7).

#![no_std]
// An empty library target lets `tracer` list this crate as a build-dependency,
// so cargo rebuilds the embedded object when the kernel programs change.

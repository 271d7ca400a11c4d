"""The ONNX backend: role graphs exported as ONNX with each `step3::*` plugin op one node of the
`step3` domain (export, per-rank build, weight index), and ONNX Runtime execution with the plugin
ops supplied as custom ops backed by the plain-torch references. See docs/onnx.md."""

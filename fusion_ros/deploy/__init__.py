"""Running the network methods where robots run networks: ONNX graphs (:mod:`.export`) executed by
ONNX Runtime, OpenVINO or TensorRT (:mod:`.backends`) instead of eager PyTorch."""

#!/usr/bin/env bash
# tflite-support reference toolchain (tests/conformance/metadata): the TFLite Metadata writers and the Task Library
# ImageClassifier that reads that metadata itself. 0.4.4 (its last release) still ships a cp311 wheel; it needs
# numpy 1 and protobuf 3. Its native modules need libusb-1.0.so.0, which this machine kind has no system copy of:
# libusb-package ships one, and a link beside the modules (inside their $ORIGIN run path) lets the loader find it.
set -euo pipefail
py=$1
"$py" -m pip install --quiet "tflite-support==0.4.4" "numpy<2" "libusb-package==1.0.30.0" "pillow"
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ln -sf "$site/libusb_package/libusb-1.0.so" "$site/tensorflow_lite_support/libusb-1.0.so.0"
"$py" -c "from tflite_support.metadata_writers import image_classifier; from tflite_support.task import vision"

"""TFLite Model Metadata for an image classifier, written by tflite-support's maintained writer.
Runs in the mobile environment (pipeline/mobile_env.py), standalone: stdlib and tflite_support only.

    python write_metadata.py MODEL.tflite LABELS.txt INFO.json OUT.tflite

MODEL is a bare flatbuffer (no associated files appended); INFO {"name", "version", "description",
"author", "license", "input_description", "output_description"}. Prints one JSON line: the metadata as
LiteRT's displayer reads it back, or {"error": ...}."""
import io
import json
import sys
import zipfile

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the associated files' zip timestamps: the same bytes every export


def populate(model, labels_path, info):
    from tflite_support import metadata_schema_py_generated as schema
    from tflite_support.metadata_writers import image_classifier, metadata_info, writer_utils

    general = metadata_info.GeneralMd(name=info["name"], version=info["version"], description=info["description"],
                                      author=info["author"], licenses=info["license"])
    image = metadata_info.InputImageTensorMd(
        name="image", description=info["input_description"], norm_mean=[0.0], norm_std=[1.0],
        color_space_type=schema.ColorSpaceType.RGB, tensor_type=writer_utils.get_input_tensor_types(model)[0])
    scores = metadata_info.ClassificationTensorMd(
        name="probability", description=info["output_description"],
        label_files=[metadata_info.LabelFileMd(labels_path)],  # TENSOR_AXIS_LABELS, packed into the file
        tensor_type=writer_utils.get_output_tensor_types(model)[0])
    return image_classifier.MetadataWriter.create_from_metadata_info(model, general, image, scores).populate()


def with_fixed_timestamps(populated):
    """The populated model with its associated files re-packed under a fixed timestamp (the writer stamps
    the current time): the flatbuffer bytes are kept, the zip after them is rebuilt, stored, in order."""
    with zipfile.ZipFile(io.BytesIO(populated)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
        start = min(i.header_offset for i in zf.infolist())
    out = io.BytesIO(populated[:start])
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=FIXED_TIME), data)
    return out.getvalue()


def main(model_path, labels_path, info_path, out_path):
    from tflite_support import metadata

    model = open(model_path, "rb").read()
    info = json.load(open(info_path))
    try:
        written = with_fixed_timestamps(populate(model, labels_path, info))
    except (ValueError, KeyError, RuntimeError) as exc:
        print(json.dumps({"error": f"{model_path}: the TFLite metadata writer refused it ({exc})"}))
        return
    shown = metadata.MetadataDisplayer.with_model_buffer(written)
    with open(out_path, "wb") as f:
        f.write(written)
    print(json.dumps({"metadata": json.loads(shown.get_metadata_json()),
                      "associated_files": shown.get_packed_associated_file_list()}))


if __name__ == "__main__":
    main(*sys.argv[1:5])

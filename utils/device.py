"""What a run trains on, in words: the GPU's name, or the CPU's model and core count.

Printed when a run starts and recorded in its config.json and results.json,
so that a time or an ms/step can always be read beside the machine that made
it (timings on two machines of the same kind have differed by 3.5x).
"""
import functools
import os
import platform


def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (or the platform's guess), with its cores."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


@functools.lru_cache(maxsize=None)
def describe_device():
    """"GPU: <name>[, ...]" for the GPUs TensorFlow sees, else "CPU: <model>, N cores"."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in gpus]
        return "GPU: " + ", ".join(names)
    return f"CPU: {cpu_model()}"

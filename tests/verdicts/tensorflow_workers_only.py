"""TensorFlow imported in the parent (no operation run there), then used
in the workers: its pool starts only in each worker."""
# verdicts: venv-tf
import multiprocessing

import tensorflow as tf

METHOD = "fork"


def task(seed):
    x = tf.random.stateless_normal((200, 200), seed=(seed, 0))
    return float(tf.reduce_sum(tf.matmul(x, x)))


if __name__ == "__main__":
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))

"""TensorFlow (its own intra-op thread pool, not OpenMP) runs a matrix
product in the parent, then in the workers."""
# verdicts: venv-tf
# verdicts-variant: TF_NUM_INTRAOP_THREADS=1
import multiprocessing

import tensorflow as tf

METHOD = "fork"


def task(seed):
    x = tf.random.stateless_normal((200, 200), seed=(seed, 0))
    return float(tf.reduce_sum(tf.matmul(x, x)))


if __name__ == "__main__":
    print(task(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))

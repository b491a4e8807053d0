import multiprocessing
import caiman as cm
import ipyparallel as ipp
from multiprocessing import Pool as P
from caiman.cluster import setup_cluster
from concurrent import futures

ctx = multiprocessing.get_context("spawn")
pool = ctx.Pool(2)
pool2 = P(2)
c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing")
c2, dview2, n2 = setup_cluster()
cluster = ipp.Cluster(n=4)
ex = futures.ProcessPoolExecutor()

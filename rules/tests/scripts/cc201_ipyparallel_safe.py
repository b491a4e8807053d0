# ipyparallel engines are separate programs (python -m ipyparallel.engine)
# that never import this script: no __main__ guard is needed for them.
import caiman as cm
import ipyparallel as ipp

cluster = ipp.Cluster(n=4)
rc = cluster.start_and_connect_sync()
c, dview, n = cm.cluster.setup_cluster(backend="ipyparallel")
c2, dview2, n2 = cm.cluster.setup_cluster(backend="single")

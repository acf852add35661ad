/* _fastudp: the memo-hit path of clusterset's UDP server, in C (Linux only).
 *
 * One call of Receiver.serve(holder, rcodes):
 *   1. recvmmsg() up to BATCH datagrams (GIL released; blocks for the first one only),
 *   2. with the GIL: look up query[2:] in holder.zone.memo_udp (a dict: bytes -> bytes);
 *      a hit is answered with query[:2] + value, a miss is returned to Python,
 *   3. sendmmsg() every hit (GIL released), the value objects kept alive meanwhile,
 *   4. add the hits' rcodes to the `rcodes` list and return
 *      (misses [(bytes, addr)], queries, truncated, dropped).
 * Python answers the misses with wire.respond() as the pure-Python loop does; that also
 * fills the memo. Nothing is cached between calls: the zone and its memo are read (and
 * referenced) anew for every batch, so a zone swap takes effect at the next batch.
 * Why in C: see the docstring of clusterset/server/udp.py (measured figures).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 32      /* datagrams per call: bounds the work done per GIL acquisition */
#define RXSIZE 65536  /* per datagram: larger than any UDP payload, as recvfrom(65535) */

typedef struct {
    PyObject_HEAD
    int fd;
    int busy;                   /* serve() is not reentrant: one Receiver per thread */
    unsigned char *rx;          /* BATCH * RXSIZE bytes, one slot per datagram */
    struct sockaddr_storage addr[BATCH];
    struct iovec rxiov[BATCH];
    struct mmsghdr rxmsg[BATCH];
    struct iovec txiov[BATCH][2]; /* [query ID from rx, memoised reply after the ID] */
    struct mmsghdr txmsg[BATCH];
    PyObject *txval[BATCH];     /* the memo values being sent: owned references */
} Receiver;

static PyObject *str_zone, *str_memo_udp;

static int Receiver_init(Receiver *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &fd))
        return -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "negative file descriptor");
        return -1;
    }
    if (self->rx == NULL) {
        self->rx = PyMem_RawMalloc((size_t)BATCH * RXSIZE);
        if (self->rx == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->fd = fd;
    return 0;
}

static void Receiver_dealloc(Receiver *self) {
    PyMem_RawFree(self->rx);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The address tuple socket.recvfrom() would give; NULL without an exception: unknown family. */
static PyObject *make_addr(const struct sockaddr_storage *ss, socklen_t len) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host))
            return NULL;
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host))
            return NULL;
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return NULL;
}

static PyObject *Receiver_serve(Receiver *self, PyObject *args) {
    PyObject *holder, *rcodes;
    if (!PyArg_ParseTuple(args, "OO!", &holder, &PyList_Type, &rcodes))
        return NULL;
    if (PyList_GET_SIZE(rcodes) < 16) {
        PyErr_SetString(PyExc_ValueError, "rcodes: expected a list of at least 16 ints");
        return NULL;
    }
    if (self->rx == NULL || self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver: not initialised, or serve() running");
        return NULL;
    }
    self->busy = 1;

    for (int i = 0; i < BATCH; i++) {
        self->rxiov[i].iov_base = self->rx + (size_t)i * RXSIZE;
        self->rxiov[i].iov_len = RXSIZE;
        memset(&self->rxmsg[i], 0, sizeof self->rxmsg[i]);
        self->rxmsg[i].msg_hdr.msg_name = &self->addr[i];
        self->rxmsg[i].msg_hdr.msg_namelen = sizeof self->addr[i];
        self->rxmsg[i].msg_hdr.msg_iov = &self->rxiov[i];
        self->rxmsg[i].msg_hdr.msg_iovlen = 1;
    }
    int n, err = 0;
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(self->fd, self->rxmsg, BATCH, MSG_WAITFORONE, NULL);
    if (n < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    if (n < 0) {
        self->busy = 0;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    PyObject *zone = NULL, *memo = NULL, *misses = NULL, *result = NULL;
    Py_ssize_t counts[16] = {0};
    Py_ssize_t queries = 0, truncated = 0, dropped = 0;
    int ntx = 0;

    misses = PyList_New(0);
    if (misses == NULL)
        goto done;
    zone = PyObject_GetAttr(holder, str_zone);
    if (zone == NULL)
        goto done;
    if (zone != Py_None) {
        memo = PyObject_GetAttr(zone, str_memo_udp);
        if (memo == NULL)
            goto done;
        if (!PyDict_Check(memo))
            Py_CLEAR(memo); /* everything goes to Python */
    }

    for (int i = 0; i < n; i++) {
        const unsigned char *buf = self->rx + (size_t)i * RXSIZE;
        Py_ssize_t len = (Py_ssize_t)self->rxmsg[i].msg_len;
        queries++;
        if (self->rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
            dropped++; /* cannot happen with RXSIZE > 65535; never answer a cut query */
            continue;
        }
        /* Memo keys are whole queries (never replies: QR clear) after the 2-byte ID. */
        if (memo != NULL && len >= 12 && !(buf[2] & 0x80)) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)buf + 2, len - 2);
            if (key == NULL)
                goto done;
            PyObject *val = PyDict_GetItemWithError(memo, key); /* borrowed */
            Py_DECREF(key);
            if (val == NULL && PyErr_Occurred())
                goto done;
            if (val != NULL && PyBytes_CheckExact(val) && PyBytes_GET_SIZE(val) >= 2) {
                const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(val);
                Py_INCREF(val); /* the memo may be cleared by another thread meanwhile */
                self->txval[ntx] = val;
                self->txiov[ntx][0].iov_base = (void *)buf; /* the client's ID */
                self->txiov[ntx][0].iov_len = 2;
                self->txiov[ntx][1].iov_base = (void *)v;
                self->txiov[ntx][1].iov_len = (size_t)PyBytes_GET_SIZE(val);
                memset(&self->txmsg[ntx], 0, sizeof self->txmsg[ntx]);
                self->txmsg[ntx].msg_hdr.msg_name = &self->addr[i];
                self->txmsg[ntx].msg_hdr.msg_namelen = self->rxmsg[i].msg_hdr.msg_namelen;
                self->txmsg[ntx].msg_hdr.msg_iov = self->txiov[ntx];
                self->txmsg[ntx].msg_hdr.msg_iovlen = 2;
                ntx++;
                counts[v[1] & 0x0F]++; /* reply byte 3: RCODE */
                if (v[0] & 0x02)       /* reply byte 2: TC */
                    truncated++;
                continue;
            }
        }
        PyObject *addr = make_addr(&self->addr[i], self->rxmsg[i].msg_hdr.msg_namelen);
        if (addr == NULL) {
            if (PyErr_Occurred())
                goto done;
            dropped++; /* not an IP peer: nothing to answer */
            continue;
        }
        PyObject *item = Py_BuildValue("(y#N)", (const char *)buf, len, addr);
        if (item == NULL || PyList_Append(misses, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }

    /* Queries handed to Python are counted there, with the rest of the fallback's work. */
    queries -= PyList_GET_SIZE(misses);
    int k = 0;
    Py_ssize_t failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (k < ntx) {
        int r = sendmmsg(self->fd, self->txmsg + k, (unsigned int)(ntx - k), 0);
        if (r > 0) {
            k += r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            failed++; /* this reply is lost (as sendto's OSError in Python); go on */
            k++;
        }
    }
    Py_END_ALLOW_THREADS
    dropped += failed;

    for (int j = 0; j < 16; j++) {
        if (counts[j] == 0)
            continue;
        PyObject *add = PyLong_FromSsize_t(counts[j]);
        PyObject *sum = add ? PyNumber_Add(PyList_GET_ITEM(rcodes, j), add) : NULL;
        Py_XDECREF(add);
        if (sum == NULL)
            goto done;
        if (PyList_SetItem(rcodes, j, sum) < 0)
            goto done;
    }
    result = Py_BuildValue("(Onnn)", misses, queries, truncated, dropped);

done:
    for (int t = 0; t < ntx; t++)
        Py_DECREF(self->txval[t]);
    Py_XDECREF(misses);
    Py_XDECREF(memo);
    Py_XDECREF(zone);
    self->busy = 0;
    return result;
}

static PyMethodDef Receiver_methods[] = {
    {"serve", (PyCFunction)Receiver_serve, METH_VARARGS,
     "serve(holder, rcodes) -> (misses, queries, truncated, dropped)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Receiver_slots[] = {
    {Py_tp_doc, "Receiver(fd): batched UDP receive, memo hits answered natively."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Receiver_init},
    {Py_tp_dealloc, Receiver_dealloc},
    {Py_tp_methods, Receiver_methods},
    {0, NULL},
};

static PyType_Spec Receiver_spec = {
    .name = "clusterset.server._fastudp.Receiver",
    .basicsize = sizeof(Receiver),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Receiver_slots,
};

static int fastudp_exec(PyObject *m) {
    str_zone = PyUnicode_InternFromString("zone");
    str_memo_udp = PyUnicode_InternFromString("memo_udp");
    if (str_zone == NULL || str_memo_udp == NULL)
        return -1;
    PyObject *tp = PyType_FromSpec(&Receiver_spec);
    if (tp == NULL)
        return -1;
    if (PyModule_AddObject(m, "Receiver", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return PyModule_AddIntConstant(m, "BATCH", BATCH);
}

static PyModuleDef_Slot fastudp_slots[] = {
    {Py_mod_exec, fastudp_exec},
    {0, NULL},
};

static struct PyModuleDef fastudp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "clusterset.server._fastudp",
    .m_doc = "Batched UDP receive/send with memo hits answered in C (see udp.py).",
    .m_size = 0,
    .m_slots = fastudp_slots,
};

PyMODINIT_FUNC PyInit__fastudp(void) { return PyModuleDef_Init(&fastudp_module); }

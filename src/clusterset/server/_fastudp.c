/* _fastudp: the memo-hit path of clusterset's UDP server, in C (Linux only).
 *
 * One call of Receiver.serve(holder, rcodes):
 *   1. recvmmsg() up to BATCH datagrams (GIL released; blocks for the first one only),
 *   2. with the GIL: look up query[2:] in holder.zone.memo_udp (a dict: bytes -> bytes);
 *      a hit is answered with query[:2] + value, a miss is returned to Python,
 *   3. sendmmsg() every hit (GIL released), the value objects kept alive meanwhile,
 *   4. with the GIL again: add the hits' rcodes to the `rcodes` list and return
 *      (misses [(bytes, addr)], queries, truncated, dropped).
 * Python answers the misses with wire.respond() as the pure-Python loop does; that also
 * fills the memo. Nothing is cached between calls: the zone and its memo are read (and
 * referenced) anew for every batch, so a zone swap takes effect at the next batch.
 * While the GIL is released only the Receiver's own C buffers are used, and the bytes of
 * the memo values it holds references to (immutable); every Python object is read with the
 * GIL held, and `rcodes` is checked again once the GIL is back.
 *
 * The Receiver owns a duplicate of the socket's fd (taken in __init__): closing the Python
 * socket never frees the number it uses, so a serve() still running can never read from or
 * send on another socket that was given that number. The duplicate is closed by close()
 * (at the end of the running serve() if one is running, which then sends nothing more),
 * or when the Receiver is freed.
 * A serve() blocked in recvmmsg is woken by shutdown(SHUT_RD) on the socket: the batch then
 * ends with entries of no length and no peer, which are skipped and not counted.
 * Why in C: see the docstring of clusterset/server/udp.py (measured figures).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32      /* datagrams per call: bounds the work done per GIL acquisition */
#define RXSIZE 65536  /* per datagram: larger than any UDP payload, as recvfrom(65535) */
#define NRCODES 16    /* the 4-bit RCODE of the header; `rcodes` must have at least these */

typedef struct {
    PyObject_HEAD
    int fd;                     /* our own duplicate of the socket's fd; -1 once closed */
    int busy;                   /* serve() is not reentrant: one Receiver per thread */
    int closing;                /* close() was called during serve(): send nothing more,
                                   close when it returns */
    unsigned char *rx;          /* BATCH * RXSIZE bytes, one slot per datagram; NULL: no
                                   __init__ yet (set once: __init__ is refused afterwards) */
    struct sockaddr_storage addr[BATCH];
    struct iovec rxiov[BATCH];
    struct mmsghdr rxmsg[BATCH];
    struct iovec txiov[BATCH][2]; /* [query ID from rx, memoised reply after the ID] */
    struct mmsghdr txmsg[BATCH];
    PyObject *txval[BATCH];     /* the memo values being sent: owned references */
} Receiver;

/* What one batch did, returned to Python or added to `rcodes` at its end. */
typedef struct {
    Py_ssize_t rcodes[NRCODES];
    Py_ssize_t queries, truncated, dropped;
    int ntx; /* hits ready to send: txmsg[0 .. ntx) */
} Tally;

static PyObject *str_zone, *str_memo_udp;

static PyObject *Receiver_new(PyTypeObject *tp, PyObject *args, PyObject *kwds) {
    Receiver *self = (Receiver *)PyType_GenericNew(tp, args, kwds);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static int Receiver_init(Receiver *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", NULL};
    int fd, type;
    socklen_t typelen = sizeof type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &fd))
        return -1;
    if (self->rx != NULL) { /* another thread may be inside serve() with our fd */
        PyErr_SetString(PyExc_RuntimeError, "Receiver: already initialised");
        return -1;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "negative file descriptor");
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &typelen) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (type != SOCK_DGRAM) {
        PyErr_SetString(PyExc_ValueError, "Receiver: not a datagram socket");
        return -1;
    }
    self->rx = PyMem_RawMalloc((size_t)BATCH * RXSIZE);
    if (self->rx == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (self->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1; /* rx stays: this Receiver cannot be initialised again */
    }
    return 0;
}

static void close_fd(Receiver *self) {
    if (self->fd >= 0)
        close(self->fd); /* our duplicate: the socket lives on while Python holds it */
    self->fd = -1;
    self->closing = 0;
}

/* From the serving thread, or another (UdpServer.stop): a serve() running then sends no
 * reply it has not started sending, and closes the fd when it returns. */
static PyObject *Receiver_close(Receiver *self, PyObject *Py_UNUSED(ignored)) {
    if (self->busy)
        self->closing = 1;
    else
        close_fd(self);
    Py_RETURN_NONE;
}

static void Receiver_dealloc(Receiver *self) {
    close_fd(self); /* never busy here: serve() holds a reference to self */
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

/* Step 1: up to BATCH datagrams into rx, the GIL released. The count, or -1 and errno. */
static int receive_batch(Receiver *self) {
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
    errno = err;
    return n;
}

/* Step 2 for datagram i (GIL held): queue a memo hit for sending, or append a miss.
 * 0, or -1 with an exception set. */
static int answer_one(Receiver *self, int i, PyObject *memo, PyObject *misses, Tally *t) {
    const unsigned char *buf = self->rx + (size_t)i * RXSIZE;
    Py_ssize_t len = (Py_ssize_t)self->rxmsg[i].msg_len;
    socklen_t namelen = self->rxmsg[i].msg_hdr.msg_namelen;
    if (len == 0 && namelen == 0)
        return 0; /* no peer: not a datagram but the end of a shut-down socket */
    if (self->rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
        t->queries++;
        t->dropped++; /* cannot happen with RXSIZE > 65535; never answer a cut query */
        return 0;
    }
    /* Memo keys are whole queries (never replies: QR clear) after the 2-byte ID. */
    if (memo != NULL && len >= 12 && !(buf[2] & 0x80)) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)buf + 2, len - 2);
        if (key == NULL)
            return -1;
        PyObject *val = PyDict_GetItemWithError(memo, key); /* borrowed */
        Py_DECREF(key);
        if (val == NULL && PyErr_Occurred())
            return -1;
        if (val != NULL && PyBytes_CheckExact(val) && PyBytes_GET_SIZE(val) >= 2) {
            const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(val);
            int k = t->ntx++;
            Py_INCREF(val); /* the memo may be cleared by another thread meanwhile */
            self->txval[k] = val;
            self->txiov[k][0].iov_base = (void *)buf; /* the client's ID */
            self->txiov[k][0].iov_len = 2;
            self->txiov[k][1].iov_base = (void *)v;
            self->txiov[k][1].iov_len = (size_t)PyBytes_GET_SIZE(val);
            memset(&self->txmsg[k], 0, sizeof self->txmsg[k]);
            self->txmsg[k].msg_hdr.msg_name = &self->addr[i];
            self->txmsg[k].msg_hdr.msg_namelen = namelen;
            self->txmsg[k].msg_hdr.msg_iov = self->txiov[k];
            self->txmsg[k].msg_hdr.msg_iovlen = 2;
            t->queries++;
            t->rcodes[v[1] & 0x0F]++; /* reply byte 3: RCODE */
            if (v[0] & 0x02)          /* reply byte 2: TC */
                t->truncated++;
            return 0;
        }
    }
    PyObject *addr = make_addr(&self->addr[i], namelen);
    if (addr == NULL) {
        if (PyErr_Occurred())
            return -1;
        t->queries++;
        t->dropped++; /* not an IP peer: nothing to answer */
        return 0;
    }
    /* A miss: counted in Python, with the rest of the fallback's work. */
    PyObject *item = Py_BuildValue("(y#N)", (const char *)buf, len, addr);
    if (item == NULL || PyList_Append(misses, item) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

/* Step 3: send txmsg[0 .. ntx), the GIL released (it reads only rx, addr and the bytes of
 * the values held in txval). The replies that could not be sent. */
static Py_ssize_t send_batch(Receiver *self, int ntx) {
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
    return failed;
}

/* Step 4 (GIL held): rcodes[j] += counts[j]. The list's size is checked here, with the GIL
 * taken back, and before each item: another thread (or an int subclass's __add__) may have
 * shrunk it since serve() checked it. 0, or -1 and an exception. */
static int add_rcodes(PyObject *rcodes, const Py_ssize_t counts[NRCODES]) {
    for (int j = 0; j < NRCODES; j++) {
        if (counts[j] == 0)
            continue;
        if (PyList_GET_SIZE(rcodes) <= j) {
            PyErr_SetString(PyExc_ValueError, "rcodes: expected a list of at least 16 ints");
            return -1;
        }
        PyObject *add = PyLong_FromSsize_t(counts[j]);
        PyObject *sum = add ? PyNumber_Add(PyList_GET_ITEM(rcodes, j), add) : NULL;
        Py_XDECREF(add);
        if (sum == NULL || PyList_SetItem(rcodes, j, sum) < 0)
            return -1;
    }
    return 0;
}

/* Steps 2 to 4 for the n datagrams in rx (GIL held); the result tuple, or NULL. */
static PyObject *answer_batch(Receiver *self, int n, PyObject *holder, PyObject *rcodes) {
    PyObject *zone = NULL, *memo = NULL, *misses = NULL, *result = NULL;
    Tally t = {0};

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
    for (int i = 0; i < n; i++)
        if (answer_one(self, i, memo, misses, &t) < 0)
            goto done;
    if (self->closing) { /* close() meanwhile (UdpServer.stop): nothing more is sent */
        t.dropped += t.ntx;
        t.truncated = 0;
        memset(t.rcodes, 0, sizeof t.rcodes); /* responses sent: none */
    } else {
        t.dropped += send_batch(self, t.ntx);
    }
    if (add_rcodes(rcodes, t.rcodes) < 0)
        goto done;
    result = Py_BuildValue("(Onnn)", misses, t.queries, t.truncated, t.dropped);

done:
    for (int k = 0; k < t.ntx; k++)
        Py_DECREF(self->txval[k]);
    Py_XDECREF(misses);
    Py_XDECREF(memo);
    Py_XDECREF(zone);
    return result;
}

static PyObject *Receiver_serve(Receiver *self, PyObject *args) {
    PyObject *holder, *rcodes, *result = NULL;
    if (!PyArg_ParseTuple(args, "OO!", &holder, &PyList_Type, &rcodes))
        return NULL;
    if (PyList_GET_SIZE(rcodes) < NRCODES) { /* checked again before use: add_rcodes */
        PyErr_SetString(PyExc_ValueError, "rcodes: expected a list of at least 16 ints");
        return NULL;
    }
    if (self->rx == NULL || self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver: not initialised, or serve() running");
        return NULL;
    }
    if (self->fd < 0) { /* closed: as a closed socket's calls */
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->busy = 1;
    int n = receive_batch(self);
    if (n < 0)
        PyErr_SetFromErrno(PyExc_OSError);
    else
        result = answer_batch(self, n, holder, rcodes);
    self->busy = 0;
    if (self->closing)
        close_fd(self);
    return result;
}

static PyMethodDef Receiver_methods[] = {
    {"serve", (PyCFunction)Receiver_serve, METH_VARARGS,
     "serve(holder, rcodes) -> (misses, queries, truncated, dropped)"},
    {"close", (PyCFunction)Receiver_close, METH_NOARGS,
     "close(): close the Receiver's own fd; a serve() running in another thread sends\n"
     "nothing more and closes it when it returns. serve() then raises OSError(EBADF)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Receiver_slots[] = {
    {Py_tp_doc, "Receiver(fd): batched UDP receive, memo hits answered natively.\n\n"
                "Works on its own duplicate of fd; call close() when done."},
    {Py_tp_new, Receiver_new},
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

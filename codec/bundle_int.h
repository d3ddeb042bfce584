/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/bundle_int.h — the bundle file's header and record kinds, shared by the in-memory codec
 * (bundle.c), the streaming reader (bundle_stream.c) and writer (bundle_stream_writer.c); private
 * to codec/. One definition, so the three cannot drift apart.
 */
#ifndef TSYNC_CODEC_BUNDLE_INT_H
#define TSYNC_CODEC_BUNDLE_INT_H

#define MAGIC     "TSYNCBDL"
#define MAGIC_LEN 8
#define HDR_LEN   (MAGIC_LEN + 2) /* magic | format | flags */
#define FLAG_ZSTD 1u
#define ZLEVEL    3
/* zstd sizes its buffers by the window a frame declares; level 3 uses 2 MiB, so refusing windows
 * above 16 MiB bounds what a few hostile bytes can make a reader allocate. */
#define ZWINDOWLOG 24

/* Format 4's record kinds (docs/PROTOCOL.md, "Bundle format 4"), and format 5's compact run
 * ("Bundle format 5"), which format 4 refuses as an unknown kind. */
enum { REC_END = 0, REC_TRUST = 1, REC_SCHEMA = 2, REC_SITE = 3, REC_RUN = 4, REC_CRUN = 5 };

#endif

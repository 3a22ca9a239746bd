# What `str(data, "utf8")` on each recv() does when one character's bytes arrive in
# two reads (lesson 15), and what an incremental decoder does instead.
import codecs

# "café\n" is 6 bytes in UTF-8: "é" is c3 a9, here split between two reads.
chunks = [b"caf\xc3", b"\xa9\n"]
try:
    print("".join(str(chunk, "utf8") for chunk in chunks))
except UnicodeDecodeError as e:
    print("str(chunk, 'utf8') per recv:", e)

# An incremental decoder keeps an unfinished character for the next chunk.
decoder = codecs.getincrementaldecoder("utf8")()
print("an incremental decoder:", repr("".join(decoder.decode(chunk) for chunk in chunks)))

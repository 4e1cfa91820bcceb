/**
 * Lines typed on stdin, one at a time, for the chat. The terminal (cooked mode) echoes and
 * edits the line; a read ends at Enter, and `null` means end of input (Ctrl-D on an empty line,
 * or a closed pipe).
 */

/** Reads lines from a byte stream; a last line without a newline still counts. */
export const lineReader = (input: ReadableStream<Uint8Array>) => {
  const reader = input.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let ended = false;
  return {
    /** The next line without its newline (and a trailing `\r`), or null at the end. */
    async next(): Promise<string | null> {
      while (!buffered.includes("\n") && !ended) {
        const { value, done } = await reader.read();
        if (done) ended = true;
        else buffered += value;
      }
      const newline = buffered.indexOf("\n");
      if (newline < 0) {
        if (buffered === "") return null;
        const last = buffered;
        buffered = "";
        return last;
      }
      const line = buffered.slice(0, newline).replace(/\r$/, "");
      buffered = buffered.slice(newline + 1);
      return line;
    },
    /** Stops reading (the chat is over). */
    cancel: (): Promise<void> => reader.cancel().catch(() => {}),
  };
};

// Sort a table.sortable by the column whose heading is clicked: numbers as numbers, text as
// text, empty cells last; a second click reverses. No network, no inline script.
"use strict";
document.querySelectorAll("table.sortable").forEach((table) => {
  const headings = Array.from(table.tHead.rows[0].cells);
  headings.forEach((th, column) => {
    th.addEventListener("click", () => {
      const descending = th.dataset.order !== "desc";
      headings.forEach((other) => { delete other.dataset.order; other.removeAttribute("aria-sort"); });
      th.dataset.order = descending ? "desc" : "asc";
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows).filter((row) => row.cells.length === headings.length);
      const key = (row) => row.cells[column].dataset.sort;
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        const nx = Number(x), ny = Number(y);
        const order = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y);
        return descending ? -order : order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
});

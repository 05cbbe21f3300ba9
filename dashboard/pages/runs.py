import streamlit as st

st.title('runs')
st.info('Not built yet.')
